"""General-capability checks: did alignment training degrade the model's everyday abilities?"""
