"""edgetune.runtime"""
