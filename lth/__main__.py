from lth.cli import main

main()
