from homerun.cli import main

raise SystemExit(main())
