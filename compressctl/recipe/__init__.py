"""Recipe format: YAML loading with positions, pydantic models, JSON Schema."""

from compressctl.recipe.loader import load_recipe, recipe_dir, recipe_model, validate_data

__all__ = ["load_recipe", "recipe_dir", "recipe_model", "recipe_schema", "validate_data"]


def recipe_schema() -> dict:
    """JSON Schema of the recipe format, for editors and `compressctl schema`."""
    schema = recipe_model().model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "compressctl recipe (version 1)"
    return schema
