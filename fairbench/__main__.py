from fairbench.cli import main

main()
