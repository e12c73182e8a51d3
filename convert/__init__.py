"""edgetune.convert"""
