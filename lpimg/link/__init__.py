"""lpimg.link"""
