from bench.faults.scenarios import main

raise SystemExit(main())
