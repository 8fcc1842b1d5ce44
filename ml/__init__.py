"""Model code for the pneumonia screening service.

Importable without Django: the web app and the worker depend on this package,
never the other way round.
"""
