from keydesk.cli import main

main()
