"""Model providers: turn a request into calls to OpenAI-compatible, Anthropic or simulated
models and into a result, with fallbacks, timeouts, costs and rate limits.

No FastAPI here: the test endpoint uses it now, the gateway later, as is.
"""
