"""Recipes: DUCC's wishlist format or a plain YAML list of image references."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

from .bounded import bounded_repr, bounded_text
from .errors import ImageReferenceError, RecipeError
from .reference import ImageRef, parse_reference
from .yamlfile import load_yaml_file

WISHLIST_KEYS = {"version", "user", "cvmfs_repo", "output_format", "input", "ignoreErrors"}


@dataclass
class Recipe:
    """The images a recipe asks for, duplicates merged, in first-seen order."""

    images: list[ImageRef]
    ignore_errors: list[str] = field(default_factory=list)
    source: str = "<recipe>"

    def is_ignored(self, ref: ImageRef) -> bool:
        """True if a failure of `ref` must not fail the run (DUCC's `ignoreErrors` globs)."""
        return any(ref.matches(pattern) for pattern in self.ignore_errors)

    def narrowed_to(self, wanted: list[ImageRef]) -> Recipe:
        """The recipe for these tags only, as the entries that ask for them spell them (scheme, and
        registry name). A tag no entry asks for, by its tag or a glob, is refused."""
        chosen: list[ImageRef] = []
        for ref in wanted:
            if ref.tag is None or ref.is_glob:
                raise RecipeError(f"{ref}: name one tag (no digest, no glob) to sync")
            asking = [
                entry
                for entry in self.images
                if (entry.api_host, entry.api_repository) == (ref.api_host, ref.api_repository)
                and entry.digest is None
                and entry.tag is not None
                and fnmatch.fnmatchcase(ref.tag, entry.tag)
            ]
            if not asking:
                raise RecipeError(f"{ref.published_name}: no entry of recipe {self.source} asks for this tag")
            chosen.append(asking[0].with_tag(ref.tag))
        return Recipe(list(dict.fromkeys(chosen)), self.ignore_errors, self.source)


def load_recipe(path: Path) -> Recipe:
    """Read and validate a recipe file; raise RecipeError naming the file and the bad entry.

    The file must be UTF-8 YAML within `yamlfile.MAX_VALUES` once aliases are expanded.
    """
    document = load_yaml_file(Path(path), "recipe", RecipeError)
    return parse_recipe(document, source=str(path))


def parse_recipe(document: object, source: str = "<recipe>") -> Recipe:
    if isinstance(document, list):
        entries, ignore = document, list[str]()
    elif isinstance(document, dict):
        unknown = sorted(set(document) - WISHLIST_KEYS, key=str)  # keys may be numbers too
        if unknown:
            msg = (
                f"recipe {source}: unknown key(s) {bounded_text(', '.join(map(str, unknown)))}; "
                f"a wishlist has {', '.join(sorted(WISHLIST_KEYS))}"
            )
            raise RecipeError(msg)
        if "input" not in document:
            raise RecipeError(f"recipe {source}: no 'input' list of images")
        if document.get("version", 1) != 1:
            raise RecipeError(f"recipe {source}: version {bounded_repr(document['version'])} unknown (use 1)")
        entries = document["input"] or []
        ignore = document.get("ignoreErrors") or []
        if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
            raise RecipeError(f"recipe {source}: 'ignoreErrors' must be a list of strings")
    elif document is None:
        raise RecipeError(f"recipe {source}: the file is empty")
    else:
        msg = f"recipe {source}: expected a list of images or a wishlist mapping with 'input'"
        raise RecipeError(msg)
    if not isinstance(entries, list):
        raise RecipeError(f"recipe {source}: 'input' must be a list of image strings")

    images: list[ImageRef] = []
    seen: set[ImageRef] = set()
    published: dict[str, tuple[int, ImageRef]] = {}
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, str):
            raise RecipeError(f"recipe {source}: entry {number} ({bounded_repr(entry)}) is not a string")
        try:
            ref = parse_reference(entry)
        except ImageReferenceError as err:
            raise RecipeError(f"recipe {source}: entry {number}: {err}") from None
        if ref in seen:
            continue
        other = published.get(ref.published_name)
        if other is not None:
            msg = (
                f"recipe {source}: entries {other[0]} ({other[1]}) and {number} ({ref}) would both be "
                f"published as {ref.published_name}; keep one of them"
            )
            raise RecipeError(msg)
        published[ref.published_name] = (number, ref)
        seen.add(ref)
        images.append(ref)
    return Recipe(images=images, ignore_errors=list(ignore), source=source)
