from s2mlp_cli.cli import main

main(prog_name="s2mlp")  # `python -m s2mlp_cli` and torchrun's `-m s2mlp_cli` are the same s2mlp
