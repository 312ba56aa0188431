from noiseforge.cli import main

raise SystemExit(main())
