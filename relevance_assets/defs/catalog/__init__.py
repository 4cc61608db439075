"""The `catalog` group: the dbt project on DuckDB (dbt_project/), wired into the asset graph with dagster-dbt."""
