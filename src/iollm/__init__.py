"""iollm: the Internet of Large Language Models.

Share models with chunk-level deduplication, run them behind the APIs people already use,
find the best combination of models for a task, and let compute providers invest in models.
"""

__version__ = "0.1.0"
