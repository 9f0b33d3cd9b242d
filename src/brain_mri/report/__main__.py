from brain_mri.report.build import main

main()
