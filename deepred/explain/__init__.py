"""SHAP: attribution maps, localization scores, and the controls that say whether a network uses the object."""
