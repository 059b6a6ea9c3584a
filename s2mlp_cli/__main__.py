from s2mlp_cli.cli import main

main()
