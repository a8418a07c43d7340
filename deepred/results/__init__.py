"""The study's outputs: metrics tables, figures, the SHAP table and figures, transfer, scale study, archive."""
