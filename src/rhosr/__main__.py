from rhosr.cli.main import main

raise SystemExit(main())
