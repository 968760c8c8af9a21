"""The read API (`/api/v1/...`): Coiled-style list calls, each scoped to the token's account."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
