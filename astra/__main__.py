from astra.cli import main

raise SystemExit(main())
