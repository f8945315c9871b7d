from videovlm.cli import main

main()
