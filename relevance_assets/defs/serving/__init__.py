"""Model → serving: item embeddings, the FAISS index, offline evaluation with blocking gates, and the
published bundle."""
