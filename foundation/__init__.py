"""The bottom layer: what every package may import and which imports nothing of the project.

Holds the one exception base (``errors``). Kept tiny on purpose: a module belongs here only when
both the functional core and the shell need it and it has no domain logic of its own.
"""
