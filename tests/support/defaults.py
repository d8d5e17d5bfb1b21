"""The documented defaults the configuration tests expect of the schema, written out once."""

from __future__ import annotations

DEFAULT_LIMITS = {
    "manifest_bytes": 4 << 20,
    "config_bytes": 8 << 20,
    "prefetch_layer_bytes": 1 << 20,
    "images_per_job": 16,
    "small_image_bytes": 16 << 20,
    "tags_per_entry": 1000,
}
