"""Shared test settings: never reach a model hub, and keep runs hermetic."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
