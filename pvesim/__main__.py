from pvesim.cli import main

main()
