from bootc_builder._entry import main

main()
