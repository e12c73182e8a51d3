"""edgetune.benchmarks"""
