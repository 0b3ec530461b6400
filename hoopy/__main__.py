from hoopy.cli import main

main()
