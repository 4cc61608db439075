"""What several test layers share: the tiny trained model and bundles (``bundles``), a real
``relevance serve`` process (``service_process``), the headless browser (``browser``). The servers a
session starts once (Spark, Redis, the S3-compatible server) are fixtures in ``tests/conftest.py``."""
