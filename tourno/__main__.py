from tourno.cli import main

main()
