"""lpimg.codec"""
