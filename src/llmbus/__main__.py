from llmbus.cli.app import main

main()
