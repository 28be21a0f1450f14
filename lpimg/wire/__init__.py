"""lpimg.wire"""
