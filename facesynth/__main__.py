from facesynth.cli import main

raise SystemExit(main())
