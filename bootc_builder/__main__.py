from bootc_builder.cli import main

main()
