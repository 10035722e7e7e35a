"""Recipes: the paper's translation experiments as resumable stages (docs/architecture.md).

runner.py runs stages, resumably and side by side; profile.py reads and checks a
recipe and its Profile; data.py prepares the data; stages.py lists the experiments,
whose stages teacher_stages.py, training_stages.py, student_stages.py and
evaluation_stages.py build."""
from onmt_qd.recipe.data import RECIPE_ONLY_KEYS
from onmt_qd.recipe.profile import RECIPES_DIR, Profile, load_recipe
from onmt_qd.recipe.runner import RecipeError, Runner, Stage
from onmt_qd.recipe.stages import Pipeline

__all__ = ["RECIPE_ONLY_KEYS", "RECIPES_DIR", "Profile",
           "load_recipe", "RecipeError", "Runner", "Stage", "Pipeline"]
