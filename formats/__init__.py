"""The formats the guarantor and the desk share: the 認証キー (access key), the 保証契約番号
(guarantee number) and the CSV tables both sides import.

A bottom layer, pure like the core: it depends on ``foundation`` only, so the guarantor (which
issues keys and numbers and reads its request CSV) and the desk's verifier (which reads them back
and imports the register) use one definition without importing each other's packages.
"""
