"""The staff console: the verified inbox in a browser, where staff decide.

A service layer over the database (``accounts``, ``inbox``, ``submission_page``, ``decisions``,
``register_view``) under two faces: the web pages (``web``) and the JSON API (``api``). Both call
the same functions, so what a script can do is exactly what a person can do in the browser.
"""
