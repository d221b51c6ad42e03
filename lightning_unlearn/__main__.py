from lightning_unlearn.cli import console_main as main

main()
