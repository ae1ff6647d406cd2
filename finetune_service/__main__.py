from finetune_service.cli import main

main()
