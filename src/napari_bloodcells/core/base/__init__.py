"""The ground floor: bounds of settings, devices and precision, image conversion, class
names, pixel scores and atomic files. Imports nothing else of the core.
"""
