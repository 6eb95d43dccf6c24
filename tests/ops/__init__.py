"""Operations: the CLI, configuration, doctor, deployment files, migrations, shared infrastructure and the layering rules."""
