from batchyard.cli.main import main

main()
