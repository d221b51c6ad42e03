from lightning_unlearn.cli import main

main()
