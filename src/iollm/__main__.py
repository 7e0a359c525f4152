from iollm.cli import main

main()
