from c2seg_kit.cli import main

main()
