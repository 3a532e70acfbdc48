from bench.reproduce.main import main

raise SystemExit(main())
