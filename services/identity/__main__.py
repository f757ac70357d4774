from services.identity.main import main

main()
