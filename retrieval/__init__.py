"""Codes, search (exact, faiss, Milvus) and retrieval metrics: pure functions on arrays."""
