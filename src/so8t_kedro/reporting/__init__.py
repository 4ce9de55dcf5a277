"""What the pipelines write for people to read: self-contained HTML reports
(:mod:`.html_report`) and the model cards beside adapters and baked models
(:mod:`.model_card`). Pure functions of plain data (framework-free, no kedro)."""
