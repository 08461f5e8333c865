from facewarden.cli.app import main

main()
