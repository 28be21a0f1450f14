"""lpimg.protocol"""
