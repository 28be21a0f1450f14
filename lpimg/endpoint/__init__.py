"""lpimg.endpoint"""
